"""The model registry: versions whole or absent, an atomic current pointer, decisions that stand."""

import json

import pytest

from fluxsr_core.errors import InputNotFoundError
from fluxsr_core.promotion import not_worse
from storage.registry import ModelRegistry


def _model(folder, tag: str):
    folder.mkdir(parents=True)
    (folder / "pytorch_lora_weights.safetensors").write_bytes(tag.encode())
    (folder / "fluxsr_model.json").write_text(json.dumps({"method": "ftd", "tag": tag}))
    return folder


def _decision(digest: str, decision: str = "promoted") -> dict:
    return {"candidate_digest": digest, "decision": decision, "decided_at": "2026-12-01T00:00:00+00:00"}


def test_promote_adds_versions_and_moves_current(tmp_path):
    from fluxsr_core.model_folder import model_digest

    reg = ModelRegistry(tmp_path)
    a, b = _model(tmp_path / "a", "a"), _model(tmp_path / "b", "b")
    assert reg.current("ftd") is None and reg.methods() == []
    v1 = reg.promote("ftd", a, _decision(model_digest(a)))
    v2 = reg.promote("ftd", b, _decision(model_digest(b)))
    assert (v1.name, v2.name) == ("v0001", "v0002") and reg.current("ftd").name == "v0002"
    assert reg.promote("ftd", b, _decision(model_digest(b))).name == "v0002"  # idempotent: no v0003
    assert [v.name for v in reg.versions("ftd")] == ["v0001", "v0002"]
    assert reg.resolve("ftd") == v2.path and reg.resolve("ftd@v0001") == v1.path
    assert (v1.path / "pytorch_lora_weights.safetensors").read_bytes() == b"a"  # a copy, kept
    with pytest.raises(InputNotFoundError, match="methods there: ftd"):
        reg.resolve("meanflow")
    with pytest.raises(InputNotFoundError, match="versions: v0001, v0002"):
        reg.resolve("ftd@v0007")


def test_a_killed_copy_is_never_a_version_nor_current(tmp_path):
    from fluxsr_core.model_folder import model_digest

    reg = ModelRegistry(tmp_path)
    a = _model(tmp_path / "a", "a")
    reg.promote("ftd", a, _decision(model_digest(a)))
    half = reg.method_dir("ftd") / "versions" / ".tmp-deadbeef"  # what a kill during the copy leaves
    half.mkdir()
    (half / "pytorch_lora_weights.safetensors").write_bytes(b"half")
    assert [v.name for v in reg.versions("ftd")] == ["v0001"] and reg.current("ftd").name == "v0001"
    b = _model(tmp_path / "b", "b")
    assert reg.promote("ftd", b, _decision(model_digest(b))).name == "v0002" and not half.exists()


def test_the_first_decision_on_a_candidate_stands(tmp_path):
    reg = ModelRegistry(tmp_path)
    first = reg.record_decision("ftd", _decision("ab" * 32, "kept"))
    again = reg.record_decision("ftd", {**_decision("ab" * 32, "promoted"), "decided_at": "later"})
    assert again == first and reg.decision_for("ftd", "ab" * 32)["decision"] == "kept"
    assert [d["decision"] for d in reg.decisions("ftd")] == ["kept"]


@pytest.mark.parametrize("cand, cur, lower, tol, ok", [
    (30.0, 30.0, False, 0.0, True), (29.9, 30.0, False, 0.0, False), (29.9, 30.0, False, 0.2, True),
    (0.20, 0.21, True, 0.0, True), (0.22, 0.21, True, 0.0, False), (0.22, 0.21, True, 0.02, True)])
def test_promotion_rule_follows_the_metric_direction(cand, cur, lower, tol, ok):
    assert not_worse(cand, cur, lower_better=lower, tolerance=tol) is ok
